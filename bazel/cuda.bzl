"""Detects CUDA and NCCL at /usr/local/cuda (or $TG_CUDA_PATH).

Creates the repository @local_cuda with:
  //:defs.bzl  HAS_CUDA (bool), HAS_NCCL (bool), NVCC (path or "")
  //:cuda      headers (as system headers) and link flags for cudart, cuBLAS
  //:nccl      headers and link flags for NCCL
BUILD files load HAS_CUDA and define their CUDA targets only when it is
True, so the same `bazel build //...` works with and without CUDA.
"""

def _cuda_configure_impl(ctx):
    root = ctx.os.environ.get("TG_CUDA_PATH", "/usr/local/cuda")
    has_cuda = ctx.path(root + "/include/cuda_runtime.h").exists and \
               ctx.path(root + "/lib64/libcudart.so").exists
    has_nccl = has_cuda and ctx.path(root + "/include/nccl.h").exists and \
               ctx.path(root + "/lib64/libnccl.so").exists
    nvcc = root + "/bin/nvcc"
    if not (has_cuda and ctx.path(nvcc).exists):
        nvcc = ""

    build = ['package(default_visibility = ["//visibility:public"])', ""]
    if has_cuda:
        ctx.symlink(root + "/include", "include")
        lib = root + "/lib64"
        # cudart alone is cheap to load; cuBLAS costs ~0.4 s and ~200 MB
        # at every process start, so only :cuda (kernels + cuBLAS) brings it.
        build.append("""cc_library(
    name = "cudart",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcudart"],
)

cc_library(
    name = "cuda",
    deps = [":cudart"],
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcublas"],
)
""".format(lib = lib))
        if has_nccl:
            build.append("""cc_library(
    name = "nccl",
    deps = [":cudart"],
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lnccl"],
)
""".format(lib = lib))
    ctx.file("BUILD.bazel", "\n".join(build))
    ctx.file("WORKSPACE", 'workspace(name = "local_cuda")\n')
    ctx.file("defs.bzl", "HAS_CUDA = {}\nHAS_NCCL = {}\nNVCC = \"{}\"\nCUDA_PATH = \"{}\"\n".format(
        has_cuda,
        has_nccl,
        nvcc,
        root if has_cuda else "",
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["TG_CUDA_PATH"],
    local = True,
)
