-- wrk script for scripts/soak.sh: a mix of session traffic against the cloakroom demo.
--
-- Each wrk thread keeps a pool of the sessions it was given: a cookie, and the form token when
-- the answer that made the session showed one. Every request is one of:
--    8 % a new visitor: GET / without a cookie (creates a session)
--    7 % a new visitor at the login form: GET /login without a cookie (creates a session that
--        holds a form token; the answer carries both the cookie and the token)
--   50 % the counter on a held session: GET / (reads and writes it)
--   20 % a read on a held session: GET /get-session
--   10 % a write on a held session: GET /set-session
--    5 % a logout: POST /logout with the session's form token (destroys the session; it leaves
--        the pool), or, for a held session whose token is not known, a read
-- A held session that expired or was logged out comes back as a new one, and the pool takes
-- the new cookie. Sessions pushed out of the full pool are abandoned and expire on the server.
--
-- Every response is checked: 200, or 303 to /login (the logout). Anything else is an error.
-- Cookie values and tokens stay in this script's memory: nothing here prints them.

local POOL_SIZE = 1000

-- Per-thread state. Globals, so `done` can read them with thread:get.
new_visitors = 0
bad_status = 0
bad_redirect = 0

local pool = {}

-- A held session: { cookie = "connect.sid=…", token = "…" or nil }.
local function pick()
  return pool[math.random(#pool)]
end

local function keep(session)
  if #pool < POOL_SIZE then
    pool[#pool + 1] = session
  else
    pool[math.random(POOL_SIZE)] = session
  end
end

local function forget(session)
  for i = 1, #pool do
    if pool[i] == session then
      pool[i] = pool[#pool]
      pool[#pool] = nil
      return
    end
  end
end

local function get(path, cookie)
  local headers = {}
  if cookie then
    headers["Cookie"] = cookie
  end
  return wrk.format("GET", path, headers)
end

function init(args)
  -- A different sequence per thread (`id` is set by `setup`).
  math.randomseed(os.time() * 100 + (id or 0))
end

function request()
  local r = math.random()
  if r < 0.15 or #pool == 0 then
    new_visitors = new_visitors + 1
    return get(r < 0.08 and "/" or "/login", nil)
  end
  local session = pick()
  if r < 0.65 then
    return get("/", session.cookie)
  elseif r < 0.85 or (r >= 0.95 and session.token == nil) then
    return get("/get-session", session.cookie)
  elseif r < 0.95 then
    return get("/set-session", session.cookie)
  end
  forget(session)
  return wrk.format("POST", "/logout", {
    ["Cookie"] = session.cookie,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "_csrf=" .. session.token)
end

function response(status, headers, body)
  if status == 303 then
    local location = headers["location"] or headers["Location"]
    if location ~= "/login" then
      bad_redirect = bad_redirect + 1
    end
  elseif status ~= 200 then
    bad_status = bad_status + 1
  end
  local set_cookie = headers["set-cookie"] or headers["Set-Cookie"]
  if set_cookie then
    -- A logout's Set-Cookie clears the value: only a non-empty one is a session to keep. The
    -- token of a new session, when its answer is a form, is in the same answer (base64url, so
    -- it needs no decoding in a form body).
    local pair = set_cookie:match("^(connect%.sid=[^;]+)")
    if pair then
      keep({ cookie = pair, token = body and body:match('name="_csrf" value="([%w_-]+)"') })
    end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function done(summary, latency, requests)
  local new, status, redirect = 0, 0, 0
  for _, thread in ipairs(threads) do
    new = new + thread:get("new_visitors")
    status = status + thread:get("bad_status")
    redirect = redirect + thread:get("bad_redirect")
  end
  local e = summary.errors
  local socket = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  -- One line for soak.sh to parse.
  io.write(string.format(
    "SOAK requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d "
      .. "bad_status=%d bad_redirect=%d socket_errors=%d new_visitors=%d\n",
    summary.requests, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    status + redirect + socket, status, redirect, socket, new))
end
