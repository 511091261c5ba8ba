"""shoal.storage"""
