"""cape_hpc.analysis"""
