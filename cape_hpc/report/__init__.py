"""cape_hpc.report"""
