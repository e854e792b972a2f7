"""Rules for CUDA code. Load HAS_CUDA and define CUDA targets only under
`if HAS_CUDA:` so that machines without /usr/local/cuda skip them."""

load("@local_cuda//:defs.bzl", _HAS_CUDA = "HAS_CUDA", _HAS_NCCL = "HAS_NCCL", _NVCC = "NVCC")

HAS_CUDA = _HAS_CUDA
HAS_NCCL = _HAS_NCCL

def tg_cuda_object(name, src, hdrs = [], nvcc_flags = [], visibility = None):
    """Compiles one .cu file with nvcc into a cc_library of one object file.

    Includes are relative to the workspace root, as for C code.
    """
    obj = name + ".pic.o"
    native.genrule(
        name = name + "_nvcc",
        srcs = [src] + hdrs,
        outs = [obj],
        cmd = "{nvcc} -O2 -std=c++17 -Xcompiler -fPIC -I. -I$(GENDIR) {flags} -c $(location {src}) -o $@".format(
            nvcc = _NVCC,
            flags = " ".join(nvcc_flags),
            src = src,
        ),
        message = "nvcc " + src,
    )
    native.cc_library(
        name = name,
        srcs = [obj],
        hdrs = hdrs,
        deps = ["@local_cuda//:cuda"],
        visibility = visibility,
    )

# BUILD files have no `if`: write CUDA targets as `[rule(...) for _ in CUDA_ONLY]`
# (or NCCL_ONLY), a list of one target where CUDA is present and none elsewhere.
CUDA_ONLY = [1] if _HAS_CUDA else []
NCCL_ONLY = [1] if _HAS_NCCL else []

# The other side, for a stand-in that says CUDA is missing:
# srcs = ["x_cuda.c" for _ in CUDA_ONLY] + ["x_none.c" for _ in WITHOUT_CUDA].
WITHOUT_CUDA = [] if _HAS_CUDA else [1]
