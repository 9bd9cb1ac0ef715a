#!/bin/sh
# Liveness: the server answers, even while it loads its AOF or a replica
# loads the dataset from its master after a full resync (LOADING).
redis-cli -p 6379 ping | grep -qE '^(PONG|LOADING)'
