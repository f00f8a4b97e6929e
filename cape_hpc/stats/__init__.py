"""cape_hpc.stats"""
