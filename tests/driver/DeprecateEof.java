// Checks that MariaDB Connector/J, which negotiates CLIENT_DEPRECATE_EOF with a server that
// offers it, reads every shape of result through Sluice: rows and an empty result, several
// results of one multi-statement query, a procedure's result sets, server-side prepared
// statements with their metadata, and a result streamed with a fetch size. Run with
// Java's source launcher:
//   java -cp /usr/share/java/mariadb-java-client.jar DeprecateEof.java PORT
// Exits non-zero with a message when something was read wrong; prints one line on success.
import java.lang.reflect.Method;
import java.sql.CallableStatement;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import org.mariadb.jdbc.MariaDbConnection;
import org.mariadb.jdbc.internal.protocol.Protocol;

public class DeprecateEof {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0]
            + "/sbtest?user=app&password=app&useServerPrepStmts=true&allowMultiQueries=true";
        try (Connection conn = DriverManager.getConnection(url)) {
            Method getProtocol = MariaDbConnection.class.getDeclaredMethod("getProtocol");
            getProtocol.setAccessible(true);
            Protocol protocol = (Protocol) getProtocol.invoke(conn.unwrap(MariaDbConnection.class));
            check(protocol.isEofDeprecated(), "the driver negotiated CLIENT_DEPRECATE_EOF");
            try (Statement s = conn.createStatement()) {
                s.execute("CREATE TABLE IF NOT EXISTS deprecate_eof_j (id INT PRIMARY KEY, v VARCHAR(20))");
                s.execute("DELETE FROM deprecate_eof_j");
                for (int i = 1; i <= 50; i++) {
                    s.execute("INSERT INTO deprecate_eof_j VALUES (" + i + ", 'v" + i + "')");
                }
                s.execute("DROP PROCEDURE IF EXISTS deprecate_eof_proc");
                s.execute("CREATE PROCEDURE deprecate_eof_proc(IN n INT) BEGIN "
                    + "SELECT id FROM deprecate_eof_j WHERE id <= n ORDER BY id; "
                    + "SELECT 'second' AS what, n AS n; END");

                check(column(s.executeQuery("SELECT v FROM deprecate_eof_j ORDER BY id")).size() == 50, "50 rows");
                check(column(s.executeQuery("SELECT v FROM deprecate_eof_j WHERE id < 0")).isEmpty(), "an empty result");

                check(s.execute("SELECT 1; SELECT v FROM deprecate_eof_j WHERE id = 7; DO 1; SELECT 3"), "multi-statement");
                check(column(s.getResultSet()).equals(List.of("1")), "first result");
                check(s.getMoreResults() && column(s.getResultSet()).equals(List.of("v7")), "second result");
                check(!s.getMoreResults() && s.getUpdateCount() == 0, "DO's OK");
                check(s.getMoreResults() && column(s.getResultSet()).equals(List.of("3")), "last result");
                check(!s.getMoreResults() && s.getUpdateCount() == -1, "nothing after");

                s.setFetchSize(5);
                check(column(s.executeQuery("SELECT v FROM deprecate_eof_j ORDER BY id")).size() == 50, "streamed 50 rows");
            }
            try (CallableStatement call = conn.prepareCall("{CALL deprecate_eof_proc(?)}")) {
                call.setInt(1, 3);
                check(call.execute(), "the procedure returns results");
                check(column(call.getResultSet()).equals(List.of("1", "2", "3")), "its first result");
                check(call.getMoreResults(), "a second result");
                ResultSet second = call.getResultSet();
                check(second.next() && second.getString(1).equals("second") && second.getInt(2) == 3, "its second result");
            }
            try (PreparedStatement select = conn.prepareStatement(
                    "SELECT id, v FROM deprecate_eof_j WHERE id BETWEEN ? AND ? ORDER BY id")) {
                ResultSetMetaData meta = select.getMetaData();
                check(meta.getColumnCount() == 2 && meta.getColumnName(2).equals("v"), "prepared metadata");
                for (int round = 0; round < 3; round++) {
                    select.setInt(1, 10);
                    select.setInt(2, 19);
                    List<String> rows = column(select.executeQuery());
                    check(rows.size() == 10 && rows.get(0).equals("10"), "prepared rows: " + rows);
                }
                select.setInt(1, 100);
                select.setInt(2, 200);
                check(column(select.executeQuery()).isEmpty(), "a prepared empty result");
            }
            System.out.println("deprecate_eof ok: every result read");
        }
    }

    static List<String> column(ResultSet rs) throws Exception {
        List<String> values = new ArrayList<>();
        while (rs.next()) {
            values.add(rs.getString(1));
        }
        rs.close();
        return values;
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("failed: " + what);
            System.exit(1);
        }
    }
}
