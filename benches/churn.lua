-- Login churn for sysbench: every event connects (with TLS under --mysql-ssl=on), logs in,
-- runs SELECT 1 and disconnects, as an application that connects per request does.
-- usage: sysbench benches/churn.lua --mysql-host=... --mysql-port=... --threads=N --time=S run

function thread_init()
   drv = sysbench.sql.driver()
end

function event()
   local con = drv:connect()
   con:query("SELECT 1")
   con:disconnect()
end
