"""cape_hpc.steering"""
