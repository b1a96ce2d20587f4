// A session bound by a user variable loses its backend connection through Sluice, with
// MariaDB Connector/J: the driver reports the proxy's ERR as SQLState 08S01 (a broken
// link), then knows the connection is gone — never a fresh one where @keep is NULL.
//   java -cp /usr/share/java/mariadb-java-client.jar LostBackend.java PORT WRITER_PORT
// Exits non-zero with a message when the proxy got something wrong; prints one line of
// facts on success.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class LostBackend {
    public static void main(String[] args) throws Exception {
        String through = "jdbc:mariadb://127.0.0.1:" + args[0] + "/sbtest?user=app&password=app";
        String direct = "jdbc:mariadb://127.0.0.1:" + args[1] + "/sbtest?user=app&password=app";
        try (Connection conn = DriverManager.getConnection(through)) {
            long backend;
            try (Statement st = conn.createStatement()) {
                st.execute("SET @keep = 42");
                try (ResultSet rs = st.executeQuery("SELECT CONNECTION_ID()")) {
                    rs.next();
                    backend = rs.getLong(1);
                }
            }
            try (Connection killer = DriverManager.getConnection(direct);
                 Statement kill = killer.createStatement()) {
                kill.execute("KILL " + backend);
            }
            String first;
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT @keep");
                fail("SELECT @keep answered after its backend connection was killed");
                return;
            } catch (SQLException e) {
                check("08S01".equals(e.getSQLState()), "SQLState " + e.getSQLState() + ": " + e);
                check(e.getErrorCode() == 1152, "error code " + e.getErrorCode() + ": " + e);
                first = e.getErrorCode() + " (" + e.getSQLState() + ")";
            }
            check(!conn.isValid(2), "the connection is known to be gone");
            System.out.println("connector/j lost backend ok: " + first + ", then isValid false");
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            fail(what);
        }
    }

    static void fail(String what) {
        System.err.println("failed: " + what);
        System.exit(1);
    }
}
