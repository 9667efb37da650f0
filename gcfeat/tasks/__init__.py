"""gcfeat.tasks"""
