-- Health of every kind of the scanengine.dev group (ScanEngine, Console, and the kinds to come),
-- from the conditions the operator writes, the way kstatus reads them:
--   Stalled=True                 -> Degraded    (only a spec change or an administrator can help)
--   Ready=True, this generation  -> Healthy
--   anything else                -> Progressing (Reconciling=True, or not yet observed)
-- A condition counts only when its observedGeneration is the object's generation: an older
-- one describes a spec that is gone.
local hs = { status = "Progressing", message = "waiting for the operator to observe this generation" }

local function current(condition)
  if obj.metadata == nil or obj.metadata.generation == nil then
    return true
  end
  return condition.observedGeneration == nil or condition.observedGeneration == obj.metadata.generation
end

local function describe(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "being deleted"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local ready, stalled, reconciling
for _, condition in ipairs(obj.status.conditions) do
  if current(condition) then
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Stalled" then
      stalled = condition
    elseif condition.type == "Reconciling" then
      reconciling = condition
    end
  end
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling)
elseif ready ~= nil then
  hs.message = describe(ready)
end
return hs
