"""pynndb.mesh"""
