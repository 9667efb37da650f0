"""gcfeat.extract"""
