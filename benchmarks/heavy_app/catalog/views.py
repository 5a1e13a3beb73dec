import gc
import os
import time

from django.db.models import Avg, Count
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from . import analytics
from .models import Category, Product


def index(request):
    categories = Category.objects.annotate(n_products=Count("products")).order_by(
        "name"
    )
    top = []
    for idx, revenue in analytics.top_products(5):
        top.append({"sku": analytics.sku_for(idx), "revenue": revenue})
    names = dict(
        Product.objects.filter(sku__in=[t["sku"] for t in top]).values_list(
            "sku", "name"
        )
    )
    for t in top:
        t["name"] = names.get(t["sku"], t["sku"])
    context = {
        "categories": categories,
        "top_products": top,
        "regions": sorted(analytics.revenue_by_region().items()),
        "n_orders": len(analytics.orders),
        "n_customers": len(analytics.customer_lookup),
        "pid": os.getpid(),
    }
    return render(request, "catalog/index.html", context)


def product_detail(request, sku):
    product = get_object_or_404(Product.objects.select_related("category"), sku=sku)
    reviews = product.reviews.all()[:10]
    rating = product.reviews.aggregate(avg=Avg("rating"), n=Count("id"))
    index = int(sku.rsplit("-", 1)[-1])
    context = {
        "product": product,
        "reviews": reviews,
        "rating": rating,
        "stats": analytics.product_stats(index),
        "percentile": analytics.price_percentile(product.price),
        "pid": os.getpid(),
    }
    return render(request, "catalog/product.html", context)


def stats(request):
    return JsonResponse(
        {
            "orders": len(analytics.orders),
            "top_products": analytics.top_products(3),
            "revenue_by_region": analytics.revenue_by_region(),
        }
    )


def customer(request, cid):
    """One entry of the in-memory customer table (a read of shared data)."""
    entry = analytics.customer_lookup.get(cid)
    if entry is None:
        return JsonResponse({"error": "no such customer", "id": cid}, status=404)
    segment, ltv, zip_code = entry
    return JsonResponse({"id": cid, "segment": segment, "ltv": ltv, "zip": zip_code})


def health(request):
    """Cheap liveness check; reports which process answered."""
    return JsonResponse({"status": "ok", "pid": os.getpid(), "ppid": os.getppid()})


def sleep(request):
    """Benchmark helper: a view that takes ``ms`` milliseconds (default 50, at most
    10,000) of wall time without using the CPU, like a view waiting on a
    database or another service; answers with the pid.

    ``GET /_bench/sleep?ms=50`` is the request of the dynamic surge benchmark
    (``surge_dynamic.py``): with sync workers, every request in flight keeps
    one worker busy for that long.
    """
    try:
        ms = min(max(float(request.GET.get("ms", "50")), 0.0), 10_000.0)
    except ValueError:
        ms = 50.0
    time.sleep(ms / 1000.0)
    return JsonResponse({"pid": os.getpid(), "slept_ms": ms})


def hold(request):
    """Benchmark helper: stream one line, then keep this request busy.

    ``GET /_bench/hold?seconds=S`` (S <= 120, default 30) answers at once
    with a first line ``{"pid": ...}`` and then sleeps S seconds before
    finishing the response.  A one-request-at-a-time (sync) worker cannot
    accept other connections meanwhile, which lets spawn_time.py make sure
    a probe is answered by a newly spawned worker.  With ``collect=1`` the
    worker first runs a full ``gc.collect()`` (memory_usage.py does this
    once in every worker, holding each so the next goes to another).
    """
    try:
        seconds = min(float(request.GET.get("seconds", "30")), 120.0)
    except ValueError:
        seconds = 30.0
    pid = os.getpid()
    collected = gc.collect() if request.GET.get("collect") == "1" else None

    def body():
        yield ('{"pid": %d, "collected": %s}\n'
               % (pid, "null" if collected is None else collected)).encode("ascii")
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(remaining, 0.5))
        yield b"done\n"

    response = StreamingHttpResponse(body(), content_type="text/plain")
    response["X-Worker-Pid"] = str(pid)
    return response


def block(request):
    """Benchmark helper for event-loop workers (ASGI): stream one line, then
    block the worker's event loop.

    ``GET /_bench/block?seconds=S`` (S <= 25, default 10; below gunicorn's
    default 30 s worker timeout) answers at once with a first line ``{"pid":
    ...}``, then sleeps S seconds *in the event loop* (a blocking
    ``time.sleep`` inside the async response iterator) before finishing.  An
    ASGI worker serves many requests at once, so ``/_bench/hold`` (a sleep in
    a thread) does not stop it from accepting; this does: while its loop is
    blocked the worker accepts no connection, which is what spawn_time.py's
    "hold" probe mode and memory_usage.py's one-collection-per-worker step
    need (asgi_models.py).  ``collect=1``: a full ``gc.collect()`` first.
    Served through WSGI it merely behaves like ``/_bench/hold``.
    """
    try:
        seconds = min(float(request.GET.get("seconds", "10")), 25.0)
    except ValueError:
        seconds = 10.0
    pid = os.getpid()
    collected = gc.collect() if request.GET.get("collect") == "1" else None
    first = ('{"pid": %d, "collected": %s}\n'
             % (pid, "null" if collected is None else collected)).encode("ascii")

    async def body():
        yield first
        time.sleep(seconds)  # deliberately blocking: the whole loop waits
        yield b"done\n"

    response = StreamingHttpResponse(body(), content_type="text/plain")
    response["X-Worker-Pid"] = str(pid)
    return response
