from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "benchmarks.heavy_app.catalog"
    label = "catalog"
    verbose_name = "Catalog"

    def ready(self):
        # Like many services that load a model or reference data at start-up,
        # build the analytics tables as soon as the app registry is ready.
        from . import analytics  # noqa: F401  (numpy, pandas, module data)
