"""pynndb.replication"""
