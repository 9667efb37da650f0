"""gcfeat.boxes"""
