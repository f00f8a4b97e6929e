"""cape_hpc.io"""
