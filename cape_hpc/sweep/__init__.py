"""cape_hpc.sweep"""
