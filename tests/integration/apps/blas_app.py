"""Test app with a native thread pool (OpenBLAS through numpy) started at import."""
import os, numpy as np
A = np.random.rand(400, 400)
A @ A  # start the BLAS thread pool in the preloader
def app(environ, start_response):
    x = float((A @ A).sum())
    body = ('{"pid": %d, "threads": %d, "x": %f}' % (os.getpid(), len(os.listdir("/proc/self/task")), x)).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
