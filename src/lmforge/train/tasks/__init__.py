"""train/tasks"""
