
-- What an answer must look like before a client sees it: the second half of the same script
-- (meshctl/edge.py renders it after request_shape.lua).
--
-- A service refusing a call for load says RESOURCE_EXHAUSTED, which the transcoder answers a REST
-- client 429, "you sent too many": here it becomes 503, "we have too many", as HTTP says, with the
-- service's Retry-After. The service's mark of such a refusal is dropped, whatever the protocol.
local OVERLOADED = {{ overloaded_header | tojson }}

function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(OVERLOADED) ~= nil then
    headers:remove(OVERLOADED)
    if headers:get(":status") == "429" then
      headers:replace(":status", "503")
    end
  end
end
