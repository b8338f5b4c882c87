"""Building shards: the plan, where each HR comes from, writing one shard, running shards on Ray, resume and regen."""
