"""pynndb.core"""
