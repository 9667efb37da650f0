"""gcfeat.cam"""
