"""ctypes_copy.py - host -> device -> host copies from Python through ctypes.

ctypes.CDLL("libascendcl.so") opens the library with dlopen (RTLD_LOCAL) and
finds every function with dlsym(handle, name), as Python bindings of AscendCL
do.  Standard library only.  stdout carries a deterministic summary only.

usage: python3 ctypes_copy.py          exit status: 0 when every byte verified.
"""
import ctypes
import hashlib
import sys

ACL_MEMCPY_HOST_TO_DEVICE = 1
ACL_MEMCPY_DEVICE_TO_HOST = 2
ACL_MEM_MALLOC_HUGE_FIRST = 0

acl = ctypes.CDLL("libascendcl.so")
for name in ("aclrtMemcpyAsync", "aclrtMemcpyAsyncWithCondition"):
    f = getattr(acl, name)
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                  ctypes.c_int, ctypes.c_void_p]
    f.restype = ctypes.c_int


def check(rc, what):
    if rc != 0:
        print(f"{what} failed with {rc}", file=sys.stderr)
        sys.exit(1)


size = 3 * 4096 + 17
check(acl.aclInit(None), "aclInit")
check(acl.aclrtSetDevice(0), "aclrtSetDevice")
stream = ctypes.c_void_p()
check(acl.aclrtCreateStream(ctypes.byref(stream)), "aclrtCreateStream")
src, dst, dev = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
check(acl.aclrtMallocHost(ctypes.byref(src), ctypes.c_size_t(size)), "aclrtMallocHost")
check(acl.aclrtMallocHost(ctypes.byref(dst), ctypes.c_size_t(size)), "aclrtMallocHost")
check(acl.aclrtMalloc(ctypes.byref(dev), ctypes.c_size_t(size), ACL_MEM_MALLOC_HUGE_FIRST),
      "aclrtMalloc")
payload = bytes((i * 31 + 7) & 0xFF for i in range(size))
ctypes.memmove(src, payload, size)
ctypes.memset(dst, 0, size)

rounds = 3
for _ in range(rounds):
    check(acl.aclrtMemcpyAsync(dev, size, src, size, ACL_MEMCPY_HOST_TO_DEVICE, stream),
          "aclrtMemcpyAsync")
    check(acl.aclrtMemcpyAsyncWithCondition(dst, size, dev, size, ACL_MEMCPY_DEVICE_TO_HOST,
                                            stream), "aclrtMemcpyAsyncWithCondition")
    check(acl.aclrtSynchronizeStream(stream), "aclrtSynchronizeStream")
back = ctypes.string_at(dst, size)
print(f"{rounds} round trips of {size} bytes: "
      f"{'identical' if back == payload else 'DIFFERENT'} "
      f"sha256 {hashlib.sha256(back).hexdigest()[:16]}")
check(acl.aclrtFree(dev), "aclrtFree")
check(acl.aclrtFreeHost(src), "aclrtFreeHost")
check(acl.aclrtFreeHost(dst), "aclrtFreeHost")
check(acl.aclrtDestroyStream(stream), "aclrtDestroyStream")
check(acl.aclFinalize(), "aclFinalize")
sys.exit(0 if back == payload else 1)
