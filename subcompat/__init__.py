"""subcompat: may this job run in an isolated sub-interpreter?

Pipeline, one stage a module: discover -> probe -> verdict -> cache -> route / report.
"""

__version__ = "0.1.0"
