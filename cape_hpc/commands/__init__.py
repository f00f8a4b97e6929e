"""cape_hpc.commands"""
