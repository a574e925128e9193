-- wrk script: POST the same CDS Hooks request body on every request.
-- The body is read once from the file named by WRK_BODY_FILE.
local path = os.getenv("WRK_BODY_FILE")
assert(path, "set WRK_BODY_FILE to the JSON request body file")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
