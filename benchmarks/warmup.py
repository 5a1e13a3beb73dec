"""The requests ``conf/smart_warm.py`` gives ``preloader_warmup`` for heavy_app.

One of every kind of page the memory benchmark's clients ask for; the
preloader runs them through the WSGI app in-process before the first fork.
"""

WARM_PATHS = (
    "/", "/", "/api/stats/", "/health",
    *("/products/SKU-%05d/" % i for i in range(0, 240, 24)),
    *("/api/customers/C%07d/" % i for i in range(0, 150_000, 15_000)),
)
