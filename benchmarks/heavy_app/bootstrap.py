"""Database set-up and warm-up for heavy_app, run on import of ``wsgi``.

``ensure_database()`` creates and seeds the SQLite file on first use.  It
holds an exclusive ``flock`` on a side file meanwhile, so concurrent
importers (several workers, the benchmark harness) do not race, and it
closes every database connection afterwards: a connection must never be
inherited across ``fork()``, which matters when the app is preloaded.
"""

import fcntl
import os
from decimal import Decimal


def _database_ready(connection):
    tables = set(connection.introspection.table_names())
    if not {"catalog_category", "catalog_product", "catalog_review"} <= tables:
        return False
    from .catalog.models import Product

    return Product.objects.exists()


def _seed():
    from django.db import transaction

    from .catalog import analytics
    from .catalog.models import Category, Product, Review

    rng = __import__("random").Random(analytics.SEED)
    adjectives = ["Compact", "Deluxe", "Classic", "Smart", "Rugged", "Eco"]
    nouns = {
        "books": ["Novel", "Atlas", "Cookbook", "Guide"],
        "electronics": ["Speaker", "Charger", "Headset", "Router"],
        "garden": ["Planter", "Hose", "Trowel", "Sprinkler"],
        "kitchen": ["Kettle", "Skillet", "Grinder", "Blender"],
        "outdoor": ["Tent", "Lantern", "Backpack", "Hammock"],
        "toys": ["Puzzle", "Kite", "Robot", "Train Set"],
    }
    with transaction.atomic():
        categories = Category.objects.bulk_create(
            [Category(name=n, slug=s) for n, s in analytics.CATEGORIES]
        )
        products = []
        for i in range(analytics.N_PRODUCTS):
            category = categories[int(analytics.product_category[i])]
            products.append(
                Product(
                    category=category,
                    sku=analytics.sku_for(i),
                    name="%s %s" % (rng.choice(adjectives), rng.choice(nouns[category.slug])),
                    price=Decimal("%.2f" % analytics.product_base_price[i]),
                    in_stock=rng.random() > 0.1,
                )
            )
        products = Product.objects.bulk_create(products)
        reviews = []
        for product in products:
            for _ in range(rng.randint(0, 6)):
                reviews.append(
                    Review(
                        product=product,
                        author=rng.choice(["ana", "bo", "chen", "dee", "eli", "fay"]),
                        rating=rng.randint(1, 5),
                        body=rng.choice(["Great.", "As described.", "Meh.", "Broke quickly."]),
                    )
                )
        Review.objects.bulk_create(reviews)


def ensure_database():
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, connections

    path = settings.DATABASES["default"]["NAME"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                if not _database_ready(connection):
                    call_command("migrate", verbosity=0, interactive=False)
                    _seed()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    finally:
        connections.close_all()


def warm_up():
    """Load what Django would otherwise load lazily on the first request."""
    from django.template.loader import get_template
    from django.urls import get_resolver

    get_resolver().url_patterns  # imports urls.py and the views
    for name in ("catalog/index.html", "catalog/product.html"):
        get_template(name)
