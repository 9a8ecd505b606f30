-- What a request must look like before any service sees it: a Jinja2 template that mesh/edge.py
-- renders into the edge's Envoy configuration.
--
-- A REST method takes only application/json: a page elsewhere can post text/plain (or no content
-- type) without a CORS preflight, so anything else is answered 415. gRPC and grpc-web requests
-- (grpc-web arrives here already turned into gRPC) must be whole length-prefixed messages: a
-- prefix that claims more than the body holds, or more than the edge takes, would otherwise wait
-- for the route's timeout, or reach a service's gRPC library and come back in its own words. They
-- are answered INVALID_ARGUMENT with MALFORMED_REQUEST, as a service answers a malformed message.
--
-- A header whose name gRPC metadata cannot carry (anything but 0-9 a-z _ . -, such as `x~y`) is
-- dropped: HTTP allows it, but the service's gRPC library would fail the whole call on it.
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

local function drop_unfit_headers(headers)
  local unfit = {}
  for name, _ in pairs(headers) do
    if string.sub(name, 1, 1) ~= ":" and not string.find(name, "^[0-9a-z_.-]+$") then
      table.insert(unfit, name)
    end
  end
  for _, name in ipairs(unfit) do
    headers:remove(name)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_unfit_headers(headers)
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
