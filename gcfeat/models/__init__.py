"""gcfeat.models"""
