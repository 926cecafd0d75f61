"""Row functions for gpu-check's fault-injection tests: each runs in the worker process like a real row."""
import os
import signal
import time


def ok(ctx, ms=1.0, **_):
    return {"ms": ms, "pid": os.getpid(), "status": "ok"}


def illegal_address(ctx):
    raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                       "asynchronously reported at some other API call")


def out_of_memory(ctx):
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def kill_own_process(ctx):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def exit_own_process(ctx):
    os._exit(7)


def hang(ctx):
    time.sleep(3600)


def slow(ctx, seconds=0.3):
    time.sleep(seconds)
    return {"pid": os.getpid(), "status": "ok"}


def environment_without_fla(ctx):
    return {"fla": "no (ModuleNotFoundError: No module named 'fla')", "mamba_ssm": "yes (2.2.4)", "status": "ok"}
