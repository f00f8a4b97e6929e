"""cape_hpc.dynamics"""
