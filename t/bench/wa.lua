-- wrk script for t/bench: POSTs WhatsApp Cloud API message webhooks to
-- /webhooks/whatsapp/+15550783881, one message each.  Grown from the
-- project's shared bench/wa.lua (same body, same RESULT line), with:
--
--   BENCH_SENDERS     0 (default): a fresh sender for every request, so
--                     no two requests ever contend; N: one of N senders at
--                     random (10: heavy contention)
--   BENCH_BODY        pad every body to this many bytes by growing the
--                     message text (1024, 65536); 0: the natural ~0.6 KB
--   BENCH_SECRET      sign every body as Meta does:
--                     X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret,
--                     body)>, through libcrypto (LuaJIT FFI)
--   BENCH_BAD_EVERY   every Nth body is cut short (a 400); 0: never
--
-- Message ids are unique across runs (a random prefix per thread), so a
-- dedup store never sees one twice.  done() prints one line:
--   RESULT rps=.. p50_us=.. p99_us=.. requests=.. non2xx=.. sockerr=..
-- where non2xx counts statuses >= 400 (wrk's errors.status).

local senders = tonumber(os.getenv("BENCH_SENDERS") or 0)
local target = tonumber(os.getenv("BENCH_BODY") or 0)
local secret = os.getenv("BENCH_SECRET") or ""
local bad_every = tonumber(os.getenv("BENCH_BAD_EVERY") or 0)

local threads, thread_id = {}, 0

function setup(thread)
    thread_id = thread_id + 1
    thread:set("id", thread_id)
    table.insert(threads, thread)
end

local function random_hex(n)
    local f = io.open("/dev/urandom", "rb")
    local s = f:read(n)
    f:close()
    return (s:gsub(".", function(c) return string.format("%02X", c:byte()) end))
end

local function random_int(n)
    local f = io.open("/dev/urandom", "rb")
    local s = f:read(4)
    f:close()
    local v = 0
    for i = 1, 4 do v = v * 256 + s:byte(i) end
    return v % n
end

-- per thread (each has its own Lua state): where its senders and ids start
local run = random_hex(8)
local sender_base = 10000000000 + random_int(80000) * 1000000
local counter = 0
math.randomseed(random_int(2147483647))

local head = [[{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"]]
local mid1 = [["}],"messages":[{"from":"]]
local mid2 = [[","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQz]]
local mid3 = [[","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?]]
local tail = [["}}]},"field":"messages"}]}]}]]

local pad = ""
if target > 0 then
    pad = string.rep(" Lorem ipsum dolor sit amet, consectetur adipiscing.",
                     math.ceil(target / 52))
end

local sign
if secret ~= "" then
    local ffi = require "ffi"
    ffi.cdef [[
        typedef struct evp_md_st EVP_MD;
        const EVP_MD *EVP_sha256(void);
        unsigned char *HMAC(const EVP_MD *evp_md, const void *key,
                            int key_len, const unsigned char *d, size_t n,
                            unsigned char *md, unsigned int *md_len);
    ]]
    local ok, crypto = pcall(ffi.load, "crypto")
    if not ok then crypto = ffi.load("libcrypto.so.3") end
    local md = ffi.new("unsigned char[32]")
    local mdlen = ffi.new("unsigned int[1]")
    local hex = {}
    for i = 0, 255 do hex[i] = string.format("%02x", i) end
    local sha256 = crypto.EVP_sha256()
    sign = function(body)
        crypto.HMAC(sha256, secret, #secret, body, #body, md, mdlen)
        local out = {}
        for i = 0, 31 do out[i + 1] = hex[md[i]] end
        return "sha256=" .. table.concat(out)
    end
end

request = function()
    counter = counter + 1

    local s
    if senders > 0 then
        s = tostring(16505550000 + math.random(0, senders - 1))
    else
        s = string.format("%d", sender_base + counter)
    end

    local id = run .. string.format("%010d", counter)
    local body = head .. s .. mid1 .. s .. mid2 .. id .. mid3

    if target > 0 then
        local n = target - #body - #tail
        if n > 0 then body = body .. pad:sub(1, n) end
    end

    body = body .. tail

    if bad_every > 0 and counter % bad_every == 0 then
        body = body:sub(1, #body - 10)
    end

    local headers = { ["Content-Type"] = "application/json" }
    if sign then headers["X-Hub-Signature-256"] = sign(body) end

    return wrk.format("POST", "/webhooks/whatsapp/+15550783881", headers,
                      body)
end

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT rps=%.0f p50_us=%d p99_us=%d requests=%d non2xx=%d "
        .. "sockerr=%d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), summary.requests,
        e.status or 0, (e.connect or 0) + (e.read or 0) + (e.write or 0)
        + (e.timeout or 0)))
end
