"""realdata"""
