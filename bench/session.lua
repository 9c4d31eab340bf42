-- wrk script for bench/run.sh: sessions under load (docs/benchmark-method.md, "Sessions under load").
--
--   wrk -t1 -c64 -d10s --latency -s bench/session.lua http://127.0.0.1:PORT/ROUTE -- COOKIE_MODE
--
-- ROUTE is login, read or counter. COOKIE_MODE is "session" (a login answer must carry
-- Set-Cookie sid=...) or "bare" (no session: no cookie expected, none sent).
--
-- /login: every request is cookie-less and must answer 200 "ok".
-- /read, /counter: each connection's first request is a cookie-less /login; its cookie joins the
-- pool of held sessions. Later requests send a held cookie. wrk's Lua API does not say which
-- connection a call belongs to, so sessions are handed out from a free list and an answer is
-- matched to the oldest session request in flight (FIFO; login answers are told apart by body). When answers come back out of issue order this
-- matching is wrong for that pair, and a session may briefly serve two requests at once; on
-- /counter the script detects it (a session's counter must go up by exactly one per answer) and
-- reports it as "out_of_order"; "later_cookie" counts Set-Cookie headers on /read and /counter
-- answers. With -t64 -c64 every connection has its own thread and Lua state,
-- one request in flight, and the matching is exact. A Set-Cookie on a later answer replaces the held cookie.
--
-- Every answer is checked: status 200, body ("ok", "user: bench", or a number), and the cookie on
-- /login for session targets. done() prints one line "SESSION_LUA {json}" for the harness.

-- Globals, so that done() can read them through thread:get.
route = "/"
mode = "session"

-- Per-thread state (one thread with -t1).
local free = {}         -- cookies not in flight (stack)
local inflight = {}     -- FIFO of the cookies of session requests in flight
local head, tail = 1, 0
local last_count = {}   -- cookie -> last counter value seen

ok_answers = 0
bad_status = 0
bad_body = 0
missing_cookie = 0
logins = 0
later_cookie = 0
out_of_order = 0
responses = 0

function setup(thread)
  threads = threads or {}
  table.insert(threads, thread)
end

function init(args)
  route = wrk.path
  mode = args[1] or "session"
end

local function push(cookie)
  tail = tail + 1
  inflight[tail] = cookie
end

local function pop()
  if head > tail then return nil end
  local cookie = inflight[head]
  inflight[head] = nil
  head = head + 1
  return cookie
end

function request()
  if route == "/login" or mode == "bare" then
    return wrk.format("GET", route, {})
  end
  local n = #free
  if n == 0 then
    -- A connection that has no session yet (its first request), or none is free.
    return wrk.format("GET", "/login", {})
  end
  local cookie = free[n]
  free[n] = nil
  push(cookie)
  return wrk.format("GET", route, { ["Cookie"] = cookie })
end

local function sid_cookie(headers)
  for name, value in pairs(headers) do
    if string.lower(name) == "set-cookie" then
      local pair = string.match(value, "^%s*(sid=[^;]*)")
      if pair then return pair end
    end
  end
  return nil
end

function response(status, headers, body)
  responses = responses + 1
  local fresh = sid_cookie(headers)
  local good = true
  if status ~= 200 then
    bad_status = bad_status + 1
    good = false
  end
  -- A login answer is told apart by its body ("ok"); the other routes never answer "ok".
  if route == "/login" or (mode == "session" and body == "ok") then
    logins = logins + 1
    if body ~= "ok" then
      bad_body = bad_body + 1
      good = false
    end
    if mode == "session" then
      if fresh == nil then
        missing_cookie = missing_cookie + 1
        good = false
      elseif route ~= "/login" then
        table.insert(free, fresh)
      end
    end
  else
    local cookie = nil
    if mode == "session" then cookie = pop() end
    if route == "/read" and body ~= "user: bench" then
      bad_body = bad_body + 1
      good = false
    elseif route == "/counter" then
      local count = tonumber(body)
      if count == nil or not string.match(body, "^%d+$") then
        bad_body = bad_body + 1
        good = false
      elseif cookie ~= nil then
        local previous = last_count[cookie]
        if previous ~= nil and count ~= previous + 1 then
          out_of_order = out_of_order + 1
        end
        last_count[cookie] = count
      end
    end
    if fresh ~= nil then later_cookie = later_cookie + 1 end
    if cookie ~= nil then
      if fresh ~= nil and fresh ~= cookie then
        last_count[fresh] = last_count[cookie]
        last_count[cookie] = nil
        cookie = fresh
      end
      table.insert(free, cookie)
    end
  end
  if good then ok_answers = ok_answers + 1 end
end

local function q(v)
  return string.format("%q", tostring(v))
end

function done(summary, latency, requests)
  local t = { ok = 0, bad_status = 0, bad_body = 0, missing_cookie = 0, logins = 0,
              later_cookie = 0, out_of_order = 0, responses = 0 }
  for _, thread in ipairs(threads or {}) do
    for k, _ in pairs(t) do
      local name = (k == "ok") and "ok_answers" or k
      t[k] = t[k] + (thread:get(name) or 0)
    end
  end
  local e = summary.errors
  local parts = {
    '"requests":' .. summary.requests,
    '"duration_us":' .. summary.duration,
    '"bytes":' .. summary.bytes,
    '"errors_connect":' .. e.connect,
    '"errors_read":' .. e.read,
    '"errors_write":' .. e.write,
    '"errors_status":' .. e.status,
    '"errors_timeout":' .. e.timeout,
    '"p50_us":' .. latency:percentile(50),
    '"p90_us":' .. latency:percentile(90),
    '"p99_us":' .. latency:percentile(99),
    '"max_us":' .. latency.max,
    '"mean_us":' .. latency.mean,
    '"route":' .. q(threads and threads[1] and threads[1]:get("route") or route),
    '"mode":' .. q(threads and threads[1] and threads[1]:get("mode") or mode),
  }
  for k, v in pairs(t) do
    table.insert(parts, '"' .. k .. '":' .. v)
  end
  io.write("SESSION_LUA {" .. table.concat(parts, ",") .. "}\n")
end
