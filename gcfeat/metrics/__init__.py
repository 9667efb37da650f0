"""gcfeat.metrics"""
