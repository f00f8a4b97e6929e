"""cape_hpc.internals"""
