"""Reference data the catalog service builds at import time.

This is the "heavy" part of heavy_app: importing it pulls in numpy and
pandas and builds, deterministically,

* ``orders``: a DataFrame of synthetic order history (``N_ORDERS`` rows),
* ``product_summary`` / ``monthly_revenue``: aggregates of it,
* ``customer_lookup``: a pure-Python dict of ``N_CUSTOMERS`` entries (many
  small Python objects, the kind of memory that copy-on-write after fork
  shares only until reference counts are touched).
"""

import numpy as np
import pandas as pd

SEED = 20240601
N_PRODUCTS = 240
N_ORDERS = 600_000
N_CUSTOMERS = 150_000

CATEGORIES = [
    ("Books", "books"),
    ("Electronics", "electronics"),
    ("Garden", "garden"),
    ("Kitchen", "kitchen"),
    ("Outdoor", "outdoor"),
    ("Toys", "toys"),
]
REGIONS = ["north", "south", "east", "west", "central"]
SEGMENTS = ["consumer", "small-business", "enterprise", "education"]

_rng = np.random.default_rng(SEED)


def sku_for(index):
    return "SKU-%05d" % index


# Per-product reference data (also used to seed the database).
product_category = _rng.integers(0, len(CATEGORIES), N_PRODUCTS)
product_base_price = np.round(_rng.lognormal(3.2, 0.8, N_PRODUCTS), 2) + 0.99

_product = _rng.integers(0, N_PRODUCTS, N_ORDERS).astype(np.int32)
_seconds = _rng.integers(0, 365 * 86400, N_ORDERS)

orders = pd.DataFrame(
    {
        "order_id": np.arange(1, N_ORDERS + 1, dtype=np.int64),
        "product": _product,
        "customer": _rng.integers(0, N_CUSTOMERS, N_ORDERS).astype(np.int32),
        "quantity": _rng.integers(1, 6, N_ORDERS).astype(np.int16),
        "unit_price": product_base_price[_product]
        * _rng.uniform(0.85, 1.15, N_ORDERS),
        "region": pd.Categorical.from_codes(
            _rng.integers(0, len(REGIONS), N_ORDERS), REGIONS
        ),
        "ts": pd.Timestamp("2024-01-01")
        + pd.to_timedelta(np.sort(_seconds), unit="s"),
    }
)
orders["revenue"] = orders["quantity"] * orders["unit_price"]

product_summary = orders.groupby("product").agg(
    orders=("order_id", "size"),
    units=("quantity", "sum"),
    revenue=("revenue", "sum"),
    avg_price=("unit_price", "mean"),
)
product_summary["revenue_rank"] = (
    product_summary["revenue"].rank(ascending=False, method="first").astype(int)
)

monthly_revenue = (
    orders.groupby([orders["ts"].dt.month, "region"], observed=True)["revenue"]
    .sum()
    .unstack("region")
)

_price_sorted = np.sort(orders["unit_price"].to_numpy())

_segment = _rng.integers(0, len(SEGMENTS), N_CUSTOMERS)
_ltv = np.round(_rng.gamma(2.0, 350.0, N_CUSTOMERS), 2)
_zip = _rng.integers(0, 100_000, N_CUSTOMERS)
customer_lookup = {
    "C%07d" % i: (SEGMENTS[s], float(v), "%05d" % z)
    for i, (s, v, z) in enumerate(zip(_segment.tolist(), _ltv.tolist(), _zip.tolist()))
}
del _product, _seconds, _segment, _ltv, _zip


def price_percentile(price):
    """Share (0-100) of all order lines sold at or below ``price``."""
    pos = np.searchsorted(_price_sorted, float(price), side="right")
    return 100.0 * pos / len(_price_sorted)


def product_stats(index):
    """Aggregates for the product with the given index (0-based)."""
    if index not in product_summary.index:
        return None
    row = product_summary.loc[index]
    return {
        "orders": int(row["orders"]),
        "units": int(row["units"]),
        "revenue": float(row["revenue"]),
        "avg_price": float(row["avg_price"]),
        "revenue_rank": int(row["revenue_rank"]),
    }


def top_products(n=5):
    """[(product index, revenue)] of the ``n`` best-selling products."""
    top = product_summary.nlargest(n, "revenue")
    return [(int(i), float(r)) for i, r in top["revenue"].items()]


def revenue_by_region():
    """{region: total revenue} over the whole year."""
    return {str(k): float(v) for k, v in monthly_revenue.sum().items()}
