"""gcfeat.io"""
