-- The statements Percona's proxysql_exporter (github.com/percona/proxysql_exporter,
-- exporter.go at commit e06ebbe) sends to ProxySQL's admin port, verbatim, each after the
-- -collect option that enables it. One statement per block; blocks are separated by lines
-- that start with "-- collect".
-- collect.mysql_status
SELECT Variable_Name, Variable_Value FROM stats_mysql_global
-- collect.mysql_connection_pool
SELECT hostgroup, srv_host, srv_port, * FROM stats_mysql_connection_pool
-- collect.mysql_connection_list
SELECT COUNT(cli_host) as connection_count, cli_host FROM stats_mysql_processlist GROUP BY cli_host
-- collect.detailed.stats_mysql_processlist
SELECT user, db, cli_host, hostgroup, COUNT(*) as count from stats_mysql_processlist group by user, db, cli_host, hostgroup
-- collect.stats_command_counter
    SELECT
        Command, Total_Time_us, Total_cnt, cnt_100us, cnt_500us, cnt_1ms, cnt_5ms, cnt_10ms, cnt_50ms,
        cnt_100ms, cnt_500ms, cnt_1s, cnt_5s, cnt_10s, cnt_INFs
    FROM
        stats_mysql_commands_counters
    WHERE Command IN (
        'CREATE_TEMPORARY',
        'DELETE',
        'INSERT',
        'LOCK_TABLES',
        'SELECT',
        'SELECT_FOR_UPDATE',
        'UPDATE'
    )
-- collect.runtime_mysql_servers
SELECT hostgroup_id, hostname, port, gtid_port, * FROM runtime_mysql_servers
-- collect.stats_memory_metrics
select Variable_Name, Variable_Value  from stats_memory_metrics
-- collect.proxysql_info (always on)
select variable_value from global_variables where variable_name = 'admin-version'
