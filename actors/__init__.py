"""shoal.actors"""
