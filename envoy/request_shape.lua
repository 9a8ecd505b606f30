-- What a request must look like before any service sees it: a Jinja2 template that mesh/edge.py
-- renders into the edge's Envoy configuration.
--
-- A REST method takes only application/json: a page elsewhere can post text/plain (or no content
-- type) without a CORS preflight, so anything else is answered 415. gRPC and grpc-web requests
-- (grpc-web arrives here already turned into gRPC) must be whole length-prefixed messages: a
-- prefix that claims more than the body holds, or more than the edge takes, would otherwise wait
-- for the route's timeout, or reach a service's gRPC library and come back in its own words. They
-- are answered INVALID_ARGUMENT with MALFORMED_REQUEST, as a service answers a malformed message.
local MAX_MESSAGE = {{ max_message_bytes }}
local MALFORMED = {
  [":status"] = "200",
  ["grpc-status"] = "{{ malformed.code }}",
  ["grpc-message"] = {{ malformed.message | tojson }},
  ["grpc-status-details-bin"] = "{{ malformed.details }}",
}

local function whole_messages(body)
  local size = body:length()
  local offset = 0
  while offset < size do
    if size - offset < 5 then
      return false
    end
    local flag, b1, b2, b3, b4 = string.byte(body:getBytes(offset, 5), 1, 5)
    local length = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if flag > 1 or length > MAX_MESSAGE or length > size - offset - 5 then
      return false
    end
    offset = offset + 5 + length
  end
  return size > 0
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = string.lower(headers:get("content-type") or "")
  if string.sub(content_type, 1, 16) == "application/grpc" then
    local body = handle:body()
    if body == nil or not whole_messages(body) then
      handle:respond(MALFORMED, "")
    end
    return
  end
  local method = headers:get(":method")
  if (method == "POST" or method == "PUT" or method == "PATCH")
      and string.sub(content_type, 1, 16) ~= "application/json" then
    handle:respond({[":status"] = "415"}, "")
  end
end
