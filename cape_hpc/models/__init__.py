"""cape_hpc.models"""
