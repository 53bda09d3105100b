-- "ready" once this node's listeners are subscribed (their subscriptions
-- leave on this turn of the loop); run.sh waits for it.
mb.after(0.05, function() print((os.getenv("NODE") or "?") .. " ready") end)
