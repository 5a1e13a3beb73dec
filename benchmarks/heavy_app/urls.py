"""URL configuration of heavy_app."""

from django.urls import path

from .catalog import views

urlpatterns = [
    path("", views.index, name="index"),
    path("products/<str:sku>/", views.product_detail, name="product-detail"),
    path("api/stats/", views.stats, name="stats"),
    path("api/customers/<str:cid>/", views.customer, name="customer"),
    path("health", views.health, name="health"),
    path("health/", views.health),
    # Benchmark helper: keeps a (sync) worker busy; see views.hold.
    path("_bench/hold", views.hold, name="hold"),
    # Benchmark helper: blocks an ASGI worker's event loop; see views.block.
    path("_bench/block", views.block, name="block"),
    # Benchmark helper: a view that sleeps ?ms= milliseconds; see views.sleep.
    path("_bench/sleep", views.sleep, name="sleep"),
]
