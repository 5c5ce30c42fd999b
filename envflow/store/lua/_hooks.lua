-- Hooks' outbox, prepended after _output.lua to every script (see envflow/store/protocol.py): the one call
-- a transition makes when a run reaches a final state (or is found LATE). Rendered in from Python:
-- OUTBOX (the stream), SITE_HOOKS (the site-wide hooks' hash), OUTBOX_MAX (its approximate cap).
-- The event names the run and the state; the deliverers (envflow/hooks/) read which hooks match from the
-- run's deployment snapshot and the site-wide hooks. A run whose deployment hooks no such event, with no
-- site-wide hook set, writes nothing.

local function hook_event(run_key, event, now)
  local on = redis.call('HGET', run_key, 'hooks_on')
  if not (on and string.find(on, '|' .. event .. '|', 1, true)) and redis.call('EXISTS', SITE_HOOKS) == 0 then
    return
  end
  redis.call('XADD', OUTBOX, 'MAXLEN', '~', OUTBOX_MAX, '*', 'run', run_id(run_key), 'state', event, 'at', now)
end
