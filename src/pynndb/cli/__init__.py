"""pynndb.cli"""
