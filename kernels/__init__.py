"""Triton kernels of ainn_fast, installed as ``ainn_fast.kernels``.

One module per op family (coupling, squeeze, frequency), each holding its kernels and
autograd Function and registering the ``"triton"`` implementation of the matching
``ainn_fast.ops`` entry. None is built yet: the ``"triton"`` backend is not registered,
and asking for it by name says so.
"""
