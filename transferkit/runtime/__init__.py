"""How this process runs TensorFlow: what ``import transferkit`` sets before TensorFlow loads, and
what a fit keeps tidy while it runs.

- :mod:`~transferkit.runtime.allocator`: glibc's malloc set so TensorFlow's CPU buffers are reused
  from the heap, not mapped and unmapped for every op.
- :mod:`~transferkit.runtime.onednn`: oneDNN's convolution kernels on AVX2 CPUs too.
- :mod:`~transferkit.runtime.tf_logging`: TensorFlow's start-up lines and log noise kept out of a
  terminal or notebook (``TRANSFERKIT_DEBUG=1`` shows everything).
- :mod:`~transferkit.runtime.collector`: Python's garbage collector kept off the objects TensorFlow
  and Keras make to last.

Each module is imported on its own and imports no TensorFlow, so ``transferkit --help`` stays instant.
"""
