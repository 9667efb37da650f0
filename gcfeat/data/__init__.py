"""gcfeat.data"""
