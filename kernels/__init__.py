"""perfjax.kernels: generators and runners of real kernels (C/OpenMP, HLS C, Pallas).

Kernels validate the models; they never import them (see the design card).
"""
