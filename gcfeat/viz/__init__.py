"""gcfeat.viz"""
