-- Argo CD does not read Ready of custom resources by itself. Add this as
-- resource.customizations.health.tollgate.dev_MCPServer in argocd-cm (see docs/operator.md).
hs = {status = "Progressing", message = "Waiting for the MCPServer to be reconciled"}
if obj.status == nil or obj.status.observedGeneration == nil or obj.metadata.generation == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  return hs
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Stalled" and c.status == "True" then
    hs.status = "Degraded"; hs.message = c.reason .. ": " .. c.message
    return hs
  end
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.reason == "ProxyScaledToZero" then
      hs.status = "Suspended" -- spec.proxy.replicas is 0: as asked, nothing runs
    else
      hs.status = "Progressing"
    end
    hs.message = c.reason .. ": " .. c.message
  end
end
return hs
